"""What people and scripts see of a store: terminal tables and JSON (`render`), `inspect`
(per round and per volume, overlay montages), `verify` (outputs against their records),
`review` (which pseudo-labels to look at first) and the HTML `report` (`report_data` what it
shows, `report_html` how).
"""
