"""The runtime: routes built from config, running source -> mapping -> buffer -> sink."""
