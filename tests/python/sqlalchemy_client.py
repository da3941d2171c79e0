"""Drives meshql serve as Apache Superset does: flightsql-dbapi's SQLAlchemy dialect
(`datafusion+flightsql://`), SQLAlchemy 1.4's inspector, bound parameters and pandas.read_sql.

Runs in its own virtual environment (.venv-sqlalchemy: flightsql-dbapi needs SQLAlchemy < 2) and
prints what it saw as JSON for tests/python/test_sqlalchemy.py to compare with the ADBC driver.
Usage: sqlalchemy_client.py HOST PORT USER PASSWORD
"""

import json
import sys
import warnings

import flightsql.sqlalchemy  # noqa: F401 — registers the `datafusion+flightsql` dialect name
import pandas as pd
import sqlalchemy as sa

host, port, user, password = sys.argv[1:5]


def engine(prepared):
    features = "&feature-sqlalchemy-primary-keys=on"
    if prepared:
        features += "&feature-sqlalchemy-prepared-statements=on"
    return sa.create_engine(f"datafusion+flightsql://{user}:{password}@{host}:{port}?insecure=true{features}")


out = {}
with engine(prepared=True).connect() as conn:
    inspector = sa.inspect(conn)
    out["schemas"] = sorted(inspector.get_schema_names())
    out["tables"] = sorted(inspector.get_table_names(schema="customer"))
    out["columns"] = [
        {"name": c["name"], "type": str(c["type"]), "nullable": bool(c.get("nullable", True))}
        for c in inspector.get_columns("profiles", schema="customer")
    ]
    out["primary_key"] = inspector.get_pk_constraint("profiles", schema="customer")["constrained_columns"]
    out["has_table"] = [
        inspector.has_table("profiles", schema="customer"),
        inspector.has_table("nowhere", schema="customer"),
    ]
    # Bound parameters, as a prepared statement (qmark).
    rows = conn.execute(
        sa.text(
            "SELECT customer_id, region FROM mesh.customer.profiles "
            "WHERE customer_id BETWEEN :lo AND :hi ORDER BY customer_id"
        ),
        {"lo": 3, "hi": 7},
    ).fetchall()
    out["prepared"] = [list(r) for r in rows]
    # The same statement bound again with other values on the same connection.
    rows = conn.execute(
        sa.text("SELECT count(*) FROM mesh.order.transactions WHERE customer_id = :c"), {"c": 5}
    ).fetchall()
    out["prepared_count"] = rows[0][0]
    # A SQLAlchemy Core query, compiled by the dialect.
    profiles = sa.Table("profiles", sa.MetaData(), autoload_with=conn, schema="customer")
    rows = conn.execute(
        sa.select(profiles.c.region, sa.func.count().label("n")).group_by(profiles.c.region).order_by(profiles.c.region)
    ).fetchall()
    out["core"] = [list(r) for r in rows]

# Literal binding (the dialect's default without the prepared-statements feature). Values must
# be bound when the statement is compiled: passed at execution they are rendered as NULL by the
# dialect (a flightsql-dbapi limitation; the README says to turn prepared statements on).
with engine(prepared=False).connect() as conn:
    rows = conn.execute(
        sa.text("SELECT count(*) FROM mesh.order.transactions WHERE customer_id = :c").bindparams(c=5)
    ).fetchall()
    out["literal_count"] = rows[0][0]

# pandas.read_sql on the engine, as notebooks do.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    frame = pd.read_sql(
        "SELECT p.region, count(*) AS orders FROM mesh.customer.profiles p "
        "JOIN mesh.order.transactions t ON t.customer_id = p.customer_id GROUP BY p.region ORDER BY p.region",
        engine(prepared=False),
    )
out["read_sql"] = [[r, int(n)] for r, n in zip(frame["region"], frame["orders"])]

# A whole table, the way a chart's "view all rows" does.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    everything = pd.read_sql("SELECT * FROM mesh.order.transactions", engine(prepared=False))
out["all_rows"] = len(everything)

print(json.dumps(out, default=str))
