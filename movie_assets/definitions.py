"""The code location: wires assets, checks, resources, schedules and sensors. Nothing else lives here."""
import dagster as dg

defs = dg.Definitions(assets=[], resources={})
