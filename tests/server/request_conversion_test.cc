// Unit tests of request_conversion.h that need no server: UTF-8 validation, defaults, and the
// event -> message mapping. The INVALID_ARGUMENT table runs end to end in
// text_generation_service_test.cc.
#include "server/request_conversion.h"

#include <memory>
#include <string>

#include "engine/model/config.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace vg::server {
namespace {

namespace pb = ::vaultgemma::v1;

const std::string kFixture = std::string(VG_SOURCE_DIR) + "/tests/fixtures/f32_mha_tied_sliding";

TEST(RequestConversionTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

TEST(RequestConversionTest, TextPromptGetsTheModelsBosAndDefaults) {
  auto tokenizer = engine::Tokenizer::Load(kFixture + "/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok());
  auto config = engine::LoadModelConfig(kFixture + "/config.json");
  ASSERT_TRUE(config.ok());
  pb::GenerateRequest request;
  request.set_text("Hello I am doing a project");
  request.set_cache_salt("tenant");
  auto converted = ToEngineRequest(request, *config, **tokenizer, "id-1");
  ASSERT_TRUE(converted.ok()) << converted.status();
  std::vector<int32_t> expected = {static_cast<int32_t>(config->bos_token_id)};
  for (int32_t id : (*tokenizer)->Encode(request.text(), false)) expected.push_back(id);
  EXPECT_EQ(converted->prompt_token_ids, expected);
  EXPECT_EQ(converted->id, "id-1");
  EXPECT_EQ(converted->stopping.max_new_tokens, kDefaultMaxNewTokens);
  EXPECT_EQ(converted->sampling.temperature, 0.0f);
  EXPECT_EQ(converted->sampling.top_p, 1.0f);
  EXPECT_EQ(converted->cache_salt, "tenant");

  request.mutable_sampling()->set_seed(7);
  request.mutable_stopping()->set_max_new_tokens(1000);  // cut to the context
  converted = ToEngineRequest(request, *config, **tokenizer, "id-2");
  ASSERT_TRUE(converted.ok());
  EXPECT_EQ(converted->sampling.seed, 7u);
  EXPECT_EQ(converted->stopping.max_new_tokens, config->max_position_embeddings);
}

// Over gRPC, protobuf rejects these before the service runs; the check here is what protects
// callers that build GenerateRequest in process.
TEST(RequestConversionTest, MalformedUtf8IsInvalidArgument) {
  auto tokenizer = engine::Tokenizer::Load(kFixture + "/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok());
  auto config = engine::LoadModelConfig(kFixture + "/config.json");
  ASSERT_TRUE(config.ok());
  pb::GenerateRequest request;
  request.set_text("ab\xC3(");
  auto converted = ToEngineRequest(request, *config, **tokenizer, "id");
  EXPECT_EQ(converted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(converted.status().message()).find("text"), std::string::npos);

  request.set_text("fine");
  request.mutable_stopping()->add_stop("\xC0\xAF");
  converted = ToEngineRequest(request, *config, **tokenizer, "id");
  EXPECT_EQ(converted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(converted.status().message()).find("stopping.stop[0]"), std::string::npos);
}

// Each registered prefix block copies the salt (engine/kv), so a huge salt would pin memory.
TEST(RequestConversionTest, CacheSaltIsBounded) {
  auto tokenizer = engine::Tokenizer::Load(kFixture + "/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok());
  auto config = engine::LoadModelConfig(kFixture + "/config.json");
  ASSERT_TRUE(config.ok());
  pb::GenerateRequest request;
  request.set_text("fine");
  request.set_cache_salt(std::string(kMaxCacheSaltBytes, 's'));
  auto converted = ToEngineRequest(request, *config, **tokenizer, "id");
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->cache_salt.size(), kMaxCacheSaltBytes);

  request.set_cache_salt(std::string(kMaxCacheSaltBytes + 1, 's'));
  converted = ToEngineRequest(request, *config, **tokenizer, "id");
  EXPECT_EQ(converted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(converted.status().message()).find("cache_salt"), std::string::npos);
}

TEST(RequestConversionTest, ToResponseMapsFinishReasonsAndUsage) {
  engine::TokenEvent event;
  event.token_ids = {5, 6};
  event.logprobs = {-0.5f, -1.5f};
  event.top_logprobs = {{{5, -0.5f}, {7, -2.0f}}, {{6, -1.5f}}};
  event.text = "ab";
  pb::GenerateResponse middle = ToResponse(event);
  EXPECT_EQ(middle.text(), "ab");
  ASSERT_EQ(middle.token_ids_size(), 2);
  ASSERT_EQ(middle.logprobs_size(), 2);
  EXPECT_FLOAT_EQ(middle.logprobs(1).logprob(), -1.5f);
  ASSERT_EQ(middle.logprobs(0).top_size(), 2);
  EXPECT_EQ(middle.logprobs(0).top(1).token_id(), 7u);
  EXPECT_EQ(middle.finish_reason(), pb::FINISH_REASON_UNSPECIFIED);
  EXPECT_FALSE(middle.has_usage());

  event.finished = true;
  event.usage = {.prompt_tokens = 3, .completion_tokens = 9, .cached_prompt_tokens = 2};
  const std::pair<engine::FinishReason, pb::FinishReason> reasons[] = {
      {engine::FinishReason::kLength, pb::FINISH_REASON_LENGTH},
      {engine::FinishReason::kEos, pb::FINISH_REASON_EOS},
      {engine::FinishReason::kStopToken, pb::FINISH_REASON_STOP_TOKEN},
      {engine::FinishReason::kStopSequence, pb::FINISH_REASON_STOP_SEQUENCE},
  };
  for (const auto& [in, out] : reasons) {
    event.finish_reason = in;
    const pb::GenerateResponse last = ToResponse(event);
    EXPECT_EQ(last.finish_reason(), out);
    EXPECT_EQ(last.usage().prompt_tokens(), 3u);
    EXPECT_EQ(last.usage().completion_tokens(), 9u);
    EXPECT_EQ(last.usage().cached_prompt_tokens(), 2u);
  }
}

}  // namespace
}  // namespace vg::server
