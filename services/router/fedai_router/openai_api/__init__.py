"""The OpenAI-compatible edge: /v1/models, /v1/chat/completions, /v1/completions, /v1/chains/{id}."""
