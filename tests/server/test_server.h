// An in-process vaultgemma.v1.TextGeneration server on 127.0.0.1:<free port> for tests, with the
// default health service, and a client stub over an insecure channel. Test-only helper.
#ifndef VG_TESTS_SERVER_TEST_SERVER_H_
#define VG_TESTS_SERVER_TEST_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/text_generation_service.h"
#include "vaultgemma/v1/text_generation.grpc.pb.h"

namespace vg::server::testing {

class TestServer {
 public:
  // `engine` must outlive the TestServer. Aborts the test (ASSERT in the caller) when port() == 0.
  explicit TestServer(engine::Engine* engine, std::string model_id = "test-model");
  ~TestServer();

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  vaultgemma::v1::TextGeneration::Stub& stub() { return *stub_; }
  TextGenerationService& service() { return service_; }

 private:
  TextGenerationService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<vaultgemma::v1::TextGeneration::Stub> stub_;
};

}  // namespace vg::server::testing

#endif  // VG_TESTS_SERVER_TEST_SERVER_H_
