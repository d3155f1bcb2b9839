"""LLM backends behind one `Backend` Protocol: `ember` (our engine), `vllm`, `openai` (any compatible server)."""
