"""The Cassandra backend: `store` (records -> CQL), `schema` (schema.cql), `session` (driver Cluster), `url`.

Nothing is imported here, so reading a URL or the schema text does not start the driver's machinery.
"""
