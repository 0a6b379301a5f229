"""The gateway's file store: chunked upload and ranged download of files referenced by opaque ids."""
