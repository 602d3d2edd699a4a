/**
 * Quoting for SQL text sent to PostgreSQL and DuckDB (both follow the SQL standard here): identifiers in
 * double quotes, string literals in single quotes, the quote character doubled inside.
 */
export const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`;

export const quoteLiteral = (s: string): string => `'${s.replaceAll("'", "''")}'`;
