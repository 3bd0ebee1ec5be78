"""The evidence format: the document (model), its typed per-kind contract (schema), the bounded JSON
reader (boundedjson), reading and writing files (jsonout) and the schema-1 converter (v1)."""
