"""llmops-chatbot: a retrieval-augmented chatbot packaged as an MLflow pyfunc model.

Nothing heavy is imported here: `import chatbot_model` must stay cheap (the CLI's --help depends on it).
"""

__version__ = "0.1.0"
