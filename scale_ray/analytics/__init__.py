"""Analytics: DuckDB over Delta snapshots, rules and corrections, budgets, recurring payments."""
