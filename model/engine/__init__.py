"""Our inference engine: paged KV cache, continuous batching, prefix caching (nano-vllm style)."""
