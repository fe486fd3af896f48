"""The OpenAI-compatible surface, /v1/: files, fine-tuning jobs, models, chat."""
