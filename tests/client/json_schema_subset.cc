#include "tests/client/json_schema_subset.h"

namespace vg::testing {
namespace {

using nlohmann::json;

bool HasType(const json& value, const std::string& type) {
  if (type == "null") return value.is_null();
  if (type == "boolean") return value.is_boolean();
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  if (type == "number") return value.is_number();
  // JSON Schema: an integer is any number with a zero fractional part.
  if (type == "integer") {
    return value.is_number_integer() ||
           (value.is_number_float() &&
            value.get<double>() == static_cast<double>(static_cast<int64_t>(value.get<double>())));
  }
  return false;
}

class Validator {
 public:
  explicit Validator(const json& root) : root_(root) {}

  void Check(const json& schema, const json& value, const std::string& path) {
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) Fail(path, "not allowed here");
      return;
    }
    if (schema.contains("$ref")) {
      const std::string ref = schema["$ref"].get<std::string>();
      const std::string prefix = "#/$defs/";
      if (ref.rfind(prefix, 0) != 0 || !root_.contains("$defs") ||
          !root_["$defs"].contains(ref.substr(prefix.size()))) {
        Fail(path, "unresolvable $ref " + ref);
        return;
      }
      Check(root_["$defs"][ref.substr(prefix.size())], value, path);
    }
    if (schema.contains("type")) {
      const json& type = schema["type"];
      bool ok = false;
      if (type.is_string()) ok = HasType(value, type.get<std::string>());
      for (const json& t : type.is_array() ? type : json::array()) {
        ok = ok || HasType(value, t.get<std::string>());
      }
      if (!ok) {
        Fail(path, "type " + type.dump() + " expected, got " + value.dump());
        return;
      }
    }
    if (schema.contains("enum")) {
      bool found = false;
      for (const json& option : schema["enum"]) found = found || option == value;
      if (!found) Fail(path, "not one of " + schema["enum"].dump() + ": " + value.dump());
    }
    if (schema.contains("minimum") && value.is_number() &&
        value.get<double>() < schema["minimum"].get<double>()) {
      Fail(path, "below the minimum " + schema["minimum"].dump());
    }
    if (value.is_object()) CheckObject(schema, value, path);
    if (value.is_array() && schema.contains("items")) {
      for (size_t i = 0; i < value.size(); ++i) {
        Check(schema["items"], value[i], path + "/" + std::to_string(i));
      }
    }
  }

  std::vector<std::string> errors;

 private:
  void CheckObject(const json& schema, const json& value, const std::string& path) {
    for (const json& name : schema.value("required", json::array())) {
      if (!value.contains(name.get<std::string>())) {
        Fail(path, "missing required \"" + name.get<std::string>() + "\"");
      }
    }
    const json properties = schema.value("properties", json::object());
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string child = path + "/" + it.key();
      if (properties.contains(it.key())) {
        Check(properties[it.key()], it.value(), child);
      } else if (schema.contains("additionalProperties")) {
        Check(schema["additionalProperties"], it.value(), child);
      }
    }
  }

  void Fail(const std::string& path, const std::string& what) {
    errors.push_back((path.empty() ? "/" : path) + ": " + what);
  }

  const json& root_;
};

}  // namespace

std::vector<std::string> ValidateJsonSchema(const json& schema, const json& instance) {
  Validator validator(schema);
  validator.Check(schema, instance, "");
  return validator.errors;
}

}  // namespace vg::testing
