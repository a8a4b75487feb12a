"""The live data flow, one module per box: sources (a reader thread per camera) -> framequeue ->
embedder (one inference thread) -> windows -> classifier -> the rule engine and sinks; daemon wires
them and orders start and stop. Stages share only the records in monitor.messages."""
