-- The shop's title of what was ordered: free text written by sellers, returned by orders.get_order.
-- Agents read it, so it is also where an injected instruction can arrive in a tool's output (evals).
ALTER TABLE sor.orders ADD COLUMN item_title text;
