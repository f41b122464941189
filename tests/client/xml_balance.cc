#include "tests/client/xml_balance.h"

#include <cctype>
#include <vector>

namespace vg::testing {
namespace {

bool NameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' ||
         c == '.';
}

// Checks an entity reference at text[i] == '&'; returns its length or 0.
size_t EntityLength(const std::string& text, size_t i) {
  for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"}) {
    if (text.compare(i, std::char_traits<char>::length(e), e) == 0) {
      return std::char_traits<char>::length(e);
    }
  }
  if (text.compare(i, 2, "&#") == 0) {
    const size_t end = text.find(';', i);
    if (end != std::string::npos && end - i <= 10) return end - i + 1;
  }
  return 0;
}

}  // namespace

std::string CheckXmlBalance(const std::string& text, const std::string& root) {
  std::vector<std::string> open;
  bool seen_root = false;
  size_t i = 0;
  if (text.compare(0, 5, "<?xml") == 0) {
    i = text.find("?>");
    if (i == std::string::npos) return "unterminated XML declaration";
    i += 2;
  }
  while (i < text.size()) {
    const char c = text[i];
    if (c == '&') {
      const size_t n = EntityLength(text, i);
      if (n == 0) return "bare '&' at offset " + std::to_string(i);
      i += n;
      continue;
    }
    if (c != '<') {
      if (open.empty() && !std::isspace(static_cast<unsigned char>(c))) {
        return "text outside the root element at offset " + std::to_string(i);
      }
      ++i;
      continue;
    }
    if (text.compare(i, 4, "<!--") == 0) {
      const size_t end = text.find("-->", i);
      if (end == std::string::npos) return "unterminated comment";
      i = end + 3;
      continue;
    }
    const bool closing = i + 1 < text.size() && text[i + 1] == '/';
    size_t j = i + (closing ? 2 : 1);
    const size_t name_start = j;
    while (j < text.size() && NameChar(text[j])) ++j;
    const std::string name = text.substr(name_start, j - name_start);
    if (name.empty()) return "tag without a name at offset " + std::to_string(i);
    // Attributes: name="value" or name='value', values without '<'.
    bool self_closing = false;
    while (true) {
      while (j < text.size() && std::isspace(static_cast<unsigned char>(text[j]))) ++j;
      if (j >= text.size()) return "unterminated tag <" + name;
      if (text[j] == '>') break;
      if (text.compare(j, 2, "/>") == 0 && !closing) {
        self_closing = true;
        ++j;
        break;
      }
      if (closing) return "attributes in the end tag of " + name;
      const size_t attr_start = j;
      while (j < text.size() && NameChar(text[j])) ++j;
      if (j == attr_start || j >= text.size() || text[j] != '=') {
        return "malformed attribute in <" + name + ">";
      }
      const char quote = text[++j];
      if (quote != '"' && quote != '\'') return "unquoted attribute in <" + name + ">";
      const size_t end = text.find(quote, j + 1);
      if (end == std::string::npos) return "unterminated attribute in <" + name + ">";
      if (text.substr(j + 1, end - j - 1).find('<') != std::string::npos) {
        return "'<' in an attribute of <" + name + ">";
      }
      j = end + 1;
    }
    i = j + 1;
    if (closing) {
      if (open.empty() || open.back() != name) return "unbalanced </" + name + ">";
      open.pop_back();
      continue;
    }
    if (open.empty()) {
      if (seen_root) return "a second root element <" + name + ">";
      if (name != root) return "root element <" + name + ">, expected <" + root + ">";  // NOLINT
      seen_root = true;
    }
    if (!self_closing) open.push_back(name);
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  if (!seen_root) return "no root element";
  return "";
}

}  // namespace vg::testing
