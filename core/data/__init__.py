"""Task data, one module per concern: readers, tables, columns, glue, hub, task, encoding, batching (import those)."""
