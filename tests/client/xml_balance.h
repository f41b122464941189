// A well-formedness check for the SVG files vaultgemma-bench writes: an optional XML declaration,
// then elements whose start and end tags nest and balance, quoted attributes, and no bare '<' or
// '&' in text. Not a full XML parser (no DTDs, CDATA or entities beyond the five predefined and
// numeric ones). Test-only helper.
#ifndef VG_TESTS_CLIENT_XML_BALANCE_H_
#define VG_TESTS_CLIENT_XML_BALANCE_H_

#include <string>

namespace vg::testing {

// Empty when `text` is well formed with a single root element named `root`; else what is wrong.
std::string CheckXmlBalance(const std::string& text, const std::string& root);

}  // namespace vg::testing

#endif  // VG_TESTS_CLIENT_XML_BALANCE_H_
