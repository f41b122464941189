// Resolves the `--model` argument: a checkpoint directory, or a Hugging Face id looked up offline
// in the local Hugging Face cache. Never touches the network.
//
// Cache root: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. An id "ORG/NAME"
// maps to `models--ORG--NAME/snapshots/<rev>/`, where <rev> is the commit in `refs/main` when that
// file exists, else the only (or most recently modified) snapshot.
#ifndef VG_ENGINE_MODEL_MODEL_PATH_H_
#define VG_ENGINE_MODEL_MODEL_PATH_H_

#include <filesystem>
#include <string_view>

#include "absl/status/statusor.h"

namespace vg::engine {

// Returns the directory holding config.json. NOT_FOUND, with a message that says how to download
// the model (`huggingface-cli download ORG/NAME`), when neither a directory nor a cached id
// matches; INVALID_ARGUMENT for an empty argument.
absl::StatusOr<std::filesystem::path> ResolveModelPath(std::string_view model);

}  // namespace vg::engine

#endif  // VG_ENGINE_MODEL_MODEL_PATH_H_
