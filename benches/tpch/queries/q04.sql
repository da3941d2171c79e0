-- TPC-H Q4: order priority checking
select o_orderpriority, count(*) as order_count
from mesh."order".orders
where o_orderdate >= date '1993-07-01'
  and o_orderdate < date '1993-10-01'
  and exists (
    select * from mesh."order".lineitem
    where l_orderkey = o_orderkey and l_commitdate < l_receiptdate)
group by o_orderpriority
order by o_orderpriority
