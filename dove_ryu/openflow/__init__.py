"""OpenFlow without a framework: the pipeline declared once, flow builders for each
role, cookies that decode to the state behind a flow, message values, packets."""
