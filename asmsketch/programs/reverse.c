#include <stdio.h>
#include <string.h>
int main(void) { char s[] = "guess and sketch: neurosymbolic transpilation"; int n = (int)strlen(s); for (int i = 0; i < n / 2; i++) { char t = s[i]; s[i] = s[n - 1 - i]; s[n - 1 - i] = t; } printf("%s %d\n", s, n); return 0; }
