/** Key/value metadata entries (StringStringEntryProto), kept in file order. */
export interface StringStringEntry {
  key: string;
  value: string;
}

export function getMetadata(entries: readonly StringStringEntry[], key: string): string | undefined {
  for (const e of entries) if (e.key === key) return e.value;
  return undefined;
}

export function setMetadata(entries: StringStringEntry[], key: string, value: string): void {
  const e = entries.find((x) => x.key === key);
  if (e) e.value = value;
  else entries.push({ key, value });
}
