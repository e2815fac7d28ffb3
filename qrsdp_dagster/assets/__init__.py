"""Assets by domain: simulation (session_log), lake (raw_events, book_states), dbt (marts)."""
