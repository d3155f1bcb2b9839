"""Weight formats: GGUF and HF safetensors in, an HF Llama folder out."""
