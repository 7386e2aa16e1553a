"""Default settings and example configuration files shipped with FOBO Broker."""
