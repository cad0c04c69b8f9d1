"""The database: transactions of named statements, one connector per database, the sqlor adapter, the schema."""
