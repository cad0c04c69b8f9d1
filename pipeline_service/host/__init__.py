"""Living in an ahserver host: config.json, the host's log, the HTTP endpoints, appcodes."""
