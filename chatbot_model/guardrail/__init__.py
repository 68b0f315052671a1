"""The toxicity guardrail: `Guardrail` and its classifier backends (`embedded`, `toxic-bert`, `auto`)."""
