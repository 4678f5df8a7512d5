"""Thin adapters around the pure core: the os-ken app and its launcher, the OVSDB IDL,
the control sockets, the admin socket, Prometheus metrics, oslo.config options.
The only place os-ken is imported (`shell`, `of_osken`, `launcher`, `options`)."""
