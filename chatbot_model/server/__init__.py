"""The FastAPI wrapper: `uvicorn chatbot_model.server:app`.

`app` is built on first access (so `chatbot_model.cli.serve` stays light for `llmops-chatbot --help`);
its settings are read at start-up, not at import.
"""

from __future__ import annotations

__all__ = ["app", "create_app"]


def __getattr__(name: str):
    if name in __all__:
        from chatbot_model.server import main  # resolved per call (replaceable at its source)

        if name == "create_app":
            return main.create_app
        globals()["app"] = application = main.create_app()
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
