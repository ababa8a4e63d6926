-- Events refused or soft-failed (issue 18), kept with the outliers: a
-- copy sent again gets the same answer without the checks, and an event
-- that names a soft-failed one as a parent finds it known. `refusal` is
-- NULL for an outlier kept for authorization (a join's auth chain, a
-- fetched auth event), else 'rejected' or 'soft_failed'.
ALTER TABLE outliers ADD COLUMN refusal TEXT;
ALTER TABLE outliers ADD COLUMN reason TEXT;
