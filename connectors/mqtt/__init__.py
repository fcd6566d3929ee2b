"""MQTT 3.1.1 and 5 connector (paho-mqtt 2)."""
