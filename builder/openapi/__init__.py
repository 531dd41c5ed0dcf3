"""OpenAPI import: read a document (Swagger 2.0, OpenAPI 3.0, 3.1) and turn it into a spec."""
