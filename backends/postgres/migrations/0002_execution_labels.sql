-- Execution searches filter on labels: each label is one array item, key U+001F value
-- (backends/sql/mapping.py label_item), found through a GIN index with @>.
ALTER TABLE executions ADD COLUMN labels TEXT[] NOT NULL DEFAULT '{}';
UPDATE executions SET labels = ARRAY(
    SELECT DISTINCT (l ->> 'key') || chr(31) || (l ->> 'value')
    FROM jsonb_array_elements(convert_from(data, 'UTF8')::jsonb -> 'labels') AS l
)
WHERE jsonb_typeof(convert_from(data, 'UTF8')::jsonb -> 'labels') = 'array';
CREATE INDEX executions_labels ON executions USING gin (labels);
