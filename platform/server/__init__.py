"""The Ember HTTP server: OpenAI-compatible API, collections, chat sessions, API keys, web UI."""
