-- Execution searches filter on labels: a JSON array of items, key U+001F value
-- (backends/sql/mapping.py label_item), tested with json_each.
ALTER TABLE executions ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
UPDATE executions SET labels = (
    SELECT json_group_array(DISTINCT json_extract(l.value, '$.key') || char(31)
                                     || json_extract(l.value, '$.value'))
    FROM json_each(executions.data, '$.labels') AS l
)
WHERE json_type(data, '$.labels') = 'array';
