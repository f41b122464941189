// A minimal HTTP/1.0 GET over loopback, for tests that scrape the /metrics endpoint.
#ifndef VG_TESTS_SERVER_HTTP_GET_H_
#define VG_TESTS_SERVER_HTTP_GET_H_

#include <string>

namespace vg::server::testing {

// The body of GET http://127.0.0.1:`port``path`, or "" when the connection fails or the status is
// not 200.
std::string HttpGetBody(int port, const std::string& path);

}  // namespace vg::server::testing

#endif  // VG_TESTS_SERVER_HTTP_GET_H_
