"""DocGen: an outline from a query, then a document from an outline, written through the LLM capability."""
