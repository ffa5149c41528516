// Finiteness of float tensors: what a checkpoint writer and a draft loader check before trusting weights,
// described so that an error can name the tensor and where its first bad value is.

/** How `data` is not finite ("NaN at index 3; 12 of 3072 values are not finite"), or null when every value is finite. */
export function nonFinite(data: Float32Array): string | null {
  let first = -1;
  let count = 0;
  for (let i = 0; i < data.length; i++) {
    if (Number.isFinite(data[i])) continue;
    if (first < 0) first = i;
    count++;
  }
  if (first < 0) return null;
  return `${data[first]} at index ${first}; ${count} of ${data.length} values are not finite`;
}
