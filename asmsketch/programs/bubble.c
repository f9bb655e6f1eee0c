#include <stdio.h>
int main(void) { int a[64]; unsigned s = 12345; for (int i = 0; i < 64; i++) { s = s * 1103515245u + 12345u; a[i] = (int)(s >> 16) % 1000 - 500; } for (int i = 0; i < 64; i++) for (int j = 0; j + 1 < 64 - i; j++) if (a[j] > a[j + 1]) { int t = a[j]; a[j] = a[j + 1]; a[j + 1] = t; } for (int i = 0; i < 64; i += 9) printf("%d ", a[i]); printf("\n"); return 0; }
