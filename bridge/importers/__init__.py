"""`natsbridge import`: a starting migration config from what a legacy broker already has.

rabbitmq.py and kafka.py read the legacy side into a plan (plan.py), names.py makes its
names valid and unique, writer.py renders it as commented YAML, cli.py checks and writes it.
"""
