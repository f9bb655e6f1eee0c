#include <stdio.h>
static long a[1000];
static int find(long v) { int lo = 0, hi = 999; while (lo <= hi) { int mid = (lo + hi) / 2; if (a[mid] == v) return mid; if (a[mid] < v) lo = mid + 1; else hi = mid - 1; } return -1; }
int main(void) { for (int i = 0; i < 1000; i++) a[i] = (long)i * i - 300 * i; long s = 0; for (long v = -20000; v < 20000; v += 7) s += find(v); printf("%ld\n", s); return 0; }
