"""The knowledge base: documents and chunking, the embedder (ONNX runtime and its export), the FAISS index and
the memory-mapped chunk store."""
