from finetune_core.infer.generate import ChatModel, Generation, generate, load_chat_model

__all__ = ["ChatModel", "Generation", "generate", "load_chat_model"]
