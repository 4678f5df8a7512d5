"""The operator's tools: ``dovectl`` and its commands (status, flows, trace, graph,
attach/detach/migrate), and the flow-dump and trace readers they are built on."""
