// A validator for the JSON Schema (draft 2020-12) subset that client/bench/results.schema.json
// uses: type (a name or a list of names), enum, minimum, required, properties,
// additionalProperties (a boolean or a schema), items, and $ref to "#/$defs/NAME". Other keywords
// are ignored. Test-only helper; lets the tests check results.json without Python.
#ifndef VG_TESTS_CLIENT_JSON_SCHEMA_SUBSET_H_
#define VG_TESTS_CLIENT_JSON_SCHEMA_SUBSET_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace vg::testing {

// Every violation found, as "PATH: what" with PATH a JSON pointer ("/stages/0/ttft_s"); empty
// when `instance` conforms to `schema`. An unresolvable $ref is reported as a violation.
std::vector<std::string> ValidateJsonSchema(const nlohmann::json& schema,
                                            const nlohmann::json& instance);

}  // namespace vg::testing

#endif  // VG_TESTS_CLIENT_JSON_SCHEMA_SUBSET_H_
