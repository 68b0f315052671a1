"""The models-from-code script MLflow logs as the chatbot model (`python_model=` this file, with
`code_paths=["chatbot_model"]`). It only names the model object; `registry.log_model` does the logging."""

import mlflow

from chatbot_model.lifecycle.pyfunc import _PyfuncChatbot

mlflow.models.set_model(_PyfuncChatbot())
