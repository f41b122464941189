#include "tests/server/test_server.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace vg::server::testing {

TestServer::TestServer(engine::Engine* engine, std::string model_id)
    : service_(engine, std::move(model_id), "cpu") {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) return;
  server_->GetHealthCheckService()->SetServingStatus(kServiceName, true);
  server_->GetHealthCheckService()->SetServingStatus(true);
  channel_ = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  stub_ = vaultgemma::v1::TextGeneration::NewStub(channel_);
}

TestServer::~TestServer() {
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
  // gRPC has run every call's OnDone by now, but orders that with its own (uninstrumented)
  // locks; waiting on the service's count says so where ThreadSanitizer sees it, as
  // server_main.cc's drain does.
  service_.WaitForNoCallsInFlight(absl::Now() + absl::Seconds(5));
}

}  // namespace vg::server::testing
