"""Reference chat server (see docs/PROTOCOL.md). Built on chatcore's vocabulary; never imports sim."""
