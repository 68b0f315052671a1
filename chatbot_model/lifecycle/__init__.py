"""The model's life in MLflow: the pyfunc model, the registry (log, register, promote, the gate), model URIs,
evaluation, adaptation from feedback, champion/challenger comparison, export and batch scoring."""
