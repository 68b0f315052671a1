"""The `llmops-chatbot` command line: the click group (`main.py`) and one module per command group."""
