-- Issue 16: a queued run keeps the trace context of the request that queued it (a W3C
-- `traceparent`: version, trace id, span id, flags; written only by the server, from its own
-- span, when traces are exported), so the worker's span of the run continues that trace.
alter table public.workflow_runs add column traceparent text;

-- The worker's metrics count runs failed for using up their attempts: rare rows, so a partial
-- index makes the count cheap at every scrape.
create index workflow_runs_exhausted on public.workflow_runs (finished_at) where error_code = 'lease_expired';
