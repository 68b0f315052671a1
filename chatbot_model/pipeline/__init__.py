"""One answered question: `LLMService` (follow-ups, guardrail, retrieval, routing, prompt, provider, output
guardrail), streaming, the router, the hint adapter and the adaptation state they read."""
